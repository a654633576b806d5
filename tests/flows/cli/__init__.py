"""The `refsr` command line through its console script: help, runs, user mistakes, workspace faults."""
