"""headstart.adapters"""
