"""resq-export: ResQ / LQER quantisation of Hugging Face LLMs into deployable artifacts."""

__version__ = "0.1.0"
