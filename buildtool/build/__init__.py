"""The build: a run over a plan (``run``) on the job DAG (``scheduler``), routed to each
platform's engine (``routing``, ``builders/``), from exact images (``pinning``), tested
(``image_tests``), recorded (``record``), with the registry as a shared action cache
(``remote_cache``); what it reports (``events``), its build times (``durations``) and
``--metadata-file`` (``metadata``)."""
