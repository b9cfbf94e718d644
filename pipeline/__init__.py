"""winnow's engine: config schema, stage registry and contract, Ray executor, run directories, CLI."""
