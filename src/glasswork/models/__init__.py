"""Models: the transformer (``backbone``) and its LightningModule (``classifier_module``)."""
