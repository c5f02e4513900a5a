"""The benchmark: model compute against the real pipeline (`python -m easycls.bench`); never imported by the
library."""
