"""The camera hub: one object per camera that knows its viewers, paces its frames and
keeps its state. It knows no camera dialect and no browser protocol; it imports nothing
else of CamProxy."""
