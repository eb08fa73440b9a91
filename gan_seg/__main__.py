"""``python -m gan_seg``: hands over to the command-line interface."""

from gan_seg_cli.main import cli

if __name__ == "__main__":
    cli()
