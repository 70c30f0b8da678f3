"""tinyprec.zoo"""
