"""CI: the stale set as waves of jobs for native runners, and the workflow that runs them."""
