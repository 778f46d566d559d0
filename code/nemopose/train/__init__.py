"""Training (``python -m nemopose.train``, TrainNeMo.sh): the network (:mod:`.model`), the
feature bank and loss (:mod:`.bank`), the configuration (:mod:`.config`), the data feed
(:mod:`.loader`), mixed precision (:mod:`.precision`), checkpoints (:mod:`.checkpoint`) and
the loop (:mod:`.loop`)."""
