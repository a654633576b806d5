"""How runs execute side by side: the task engine, job claims and index locks, Ctrl-C, identity, the crash hook."""
