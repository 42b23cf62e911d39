"""Data: bring raw data in (``sources``), check it (``schema``), split it (``prepare``), and
feed it to the model (``datamodule``)."""
