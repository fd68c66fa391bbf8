"""fanout: bulk archive chunks into child archive jobs; isolated note-event handlers."""
