"""Task datasets in their real file formats (SHD h5, MNIST idx, PTB text) and procedural Randman."""
