"""Emulated cameras for the demo and the tests. They import nothing else of CamProxy."""
