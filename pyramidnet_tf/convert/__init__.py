"""Reading the authors' released weights (Torch7, Caffe) into the structure of our network."""
