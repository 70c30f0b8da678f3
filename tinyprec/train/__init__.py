"""tinyprec.train"""
