"""imharmony.diagnostics"""
