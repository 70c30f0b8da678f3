"""tinyprec.validate"""
