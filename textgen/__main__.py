import sys

try:
    from textgen.cli import main
except KeyboardInterrupt:  # a Ctrl-C before main() can catch it ends the same way
    sys.stderr.write("error: interrupted\n")
    sys.exit(130)

# Guarded: a worker process started by `python -m textgen serve --workers N` imports this module
# again (multiprocessing's spawn), and must not run the command line a second time.
if __name__ == "__main__":
    main()
