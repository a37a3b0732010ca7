"""headstart.imports"""
