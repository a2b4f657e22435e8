from textgen.cli import main

# Guarded: a worker process started by `python -m textgen serve --workers N` imports this module
# again (multiprocessing's spawn), and must not run the command line a second time.
if __name__ == "__main__":
    main()
