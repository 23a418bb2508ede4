"""Decoding constraints, in one place: what a request's tools, tool_choice and response_format
become (build), whether the grammar engine can enforce a schema (schemas), compiling with
xgrammar (compiler, and pool for the template service's deadline), and the forms each decode
engine takes (dialects, and ebnf: the rewrite for xgrammar 0.1.25).

Nothing is imported here: a decode image with an older xgrammar imports only what it uses.
"""
