"""The Textual app: `DinfApp`, its screens, widgets and messages. It asks the core for everything."""
