"""What hotsauce holds on the build host: child processes, the ledger of held resources and
their release, signals, and sizes."""
