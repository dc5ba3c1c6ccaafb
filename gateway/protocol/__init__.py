"""Protocol codecs, sans I/O: Modbus (RTU, TCP, RTU-over-TCP) and DL/T 645-2007 frames in, events out."""
