"""tinyprec.data"""
