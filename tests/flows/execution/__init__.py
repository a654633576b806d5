"""Tests of flows/execution: the task engine, Ctrl-C, several processes on one database."""
