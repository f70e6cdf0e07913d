"""placeholder"""
def configure(p):
    pass
def run(args):
    raise NotImplementedError
