"""Compiled code: the oneDNN convolution handlers (`onednn_conv.cc`) and their build (`build.py`)."""
