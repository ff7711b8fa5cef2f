"""Small helpers shared by the model core, training and sampling."""
