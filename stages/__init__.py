"""One file per stage: pure helpers first, then one Stage class. See ``stages.registry``."""
