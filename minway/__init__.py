"""minway: Prompt Waywardness (Khashabi et al., NAACL 2022), from scratch."""
__version__ = "0.1.0"
