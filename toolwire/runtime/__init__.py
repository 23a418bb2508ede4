"""What every service needs at run time and the command line does not own: where the model's
files come from (model_source) and how many CPUs this process may use (cpus)."""
