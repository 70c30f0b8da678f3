"""tinyprec.mcu"""
