"""Runtime services below every job: processes and devices, compiler options, workdirs, progress."""
