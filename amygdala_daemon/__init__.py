"""amygdala-daemon: keeps emotion readout vectors fresh from an agent's memory graph."""

__version__ = "0.1.0"
