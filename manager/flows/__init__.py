"""The Manager's job flows, one per service kind: print, scan and faxout.

Each runs a claimed job while it holds its service's device slot and returns the job's
Outcome; the runner then sends the final job-status. Flows are composed into the runner
(``manager.runner.Runner.flows``), not mixed in.
"""
