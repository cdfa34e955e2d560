"""What the model families share: one training loop (:mod:`.loop`), one model-folder format
(:mod:`.model_folder`), optimizers and schedules (:mod:`.optim`), devices and data-parallel
sharding (:mod:`.devices`) and provenance (:mod:`.provenance`)."""
