"""fmnist_lit's Optuna sweeper, where Hydra looks for plugins (it instantiates sweepers from `hydra_plugins` only)."""
