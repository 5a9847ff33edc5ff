"""dataset/converters"""
