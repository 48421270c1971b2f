"""`python -m dialoglab.report <sweep or runs dir>`: a ranked table and plots of runs, offline.

See dialoglab.experiment.sweep_report for what is read and written.
"""

from dialoglab.experiment.sweep_report import main
from dialoglab.extras import exit_unless_installed

if __name__ == "__main__":
    exit_unless_installed("sweeps", "matplotlib", feature="the report")
    main()
