"""Reading and writing images with their geometry (NIfTI, 4D cine, DICOM series)."""
