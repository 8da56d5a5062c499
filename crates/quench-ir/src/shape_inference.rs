//! Static shape and type inference over the IR (filled in by the shape-inference work).
