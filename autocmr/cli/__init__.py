"""Thin command-line entry points: each parses arguments and calls one library function."""
