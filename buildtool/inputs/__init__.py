"""Inputs: the file set one platform build reads (``filesets``), expanded in its context
(``context_tree``) under Docker's ignore rules (``dockerignore``), and the described sets kept
between runs (``setcache``). A new kind of input is a new entry of the file set, made here."""
