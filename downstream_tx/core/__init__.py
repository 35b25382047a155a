"""What both protocols share: the events observed, node keys, tokens, farmers and reputation."""
