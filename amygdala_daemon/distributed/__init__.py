"""Full rebuilds on a Ray cluster: workers run the model, the writer stays one process.

Ray is imported only here, and only when a distributed rebuild starts (`amygdala-daemon[ray]`).
"""
