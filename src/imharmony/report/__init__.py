"""imharmony.report"""
