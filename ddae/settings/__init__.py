"""The config dataclasses every job builds from config.yaml, in modules that import no torch, so
that the Snakefile validates a whole config while it plans (`ddae.config_checks`) without
importing torch. The modules that run a stage import their config class from here."""
