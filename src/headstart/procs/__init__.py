"""headstart.procs"""
