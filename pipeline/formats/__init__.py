"""Model files and folders: what each file is, how it is written, and how it is read without running code."""
