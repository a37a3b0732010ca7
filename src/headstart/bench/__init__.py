"""headstart.bench"""
