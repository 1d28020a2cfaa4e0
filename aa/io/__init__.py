"""Files and the command line: video and image reading/writing (PyAV), and what the scripts share (argument checks,
exit codes, atomic writes' failures, stop signals)."""
