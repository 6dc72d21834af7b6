"""Started in a child process by tests/support/full_disk.py's FullDisk.env(): the same full disk there."""
import full_disk

full_disk.install_from_env()
