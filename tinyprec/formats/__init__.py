"""tinyprec.formats"""
